import MailModel
import NIOConcurrencyHelpers
import NIOCore

/// The error every missed network deadline turns into: a retryable connection
/// failure naming the host and what we were waiting for.
public func deadlineError(host: String, waitingFor what: String, after timeout: Duration) -> MailError {
    MailError(.connection, scope: .account, retryable: true,
              "\(host) did not answer in time (waited \(formatDuration(timeout)) for \(what))",
              hint: "the server may be overloaded or the network down; try again later")
}

func formatDuration(_ d: Duration) -> String {
    let (seconds, attoseconds) = d.components
    if attoseconds == 0 { return "\(seconds) s" }
    let ms = Double(seconds) * 1000 + Double(attoseconds) / 1e15
    return ms >= 1000 ? String(format: "%.1f s", ms / 1000) : "\(Int(ms)) ms"
}

extension Duration {
    /// The duration as a NIO `TimeAmount` (nanosecond precision, clamped).
    public var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        let maxSeconds = Int64.max / 1_000_000_000 - 1
        if seconds >= maxSeconds { return .nanoseconds(Int64.max) }
        if seconds < 0 { return .zero }
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension EventLoopFuture where Value: Sendable {
    /// This future, failed with a retryable `.connection` `MailError` naming `host` if it has
    /// not completed within `timeout`. When `channel` is given it is closed on timeout, so
    /// whatever was waiting on it fails too and no half-read reply is left behind.
    public func withDeadline(_ timeout: Duration, host: String, waitingFor what: String,
                             closing channel: Channel? = nil) -> EventLoopFuture<Value> {
        let promise = eventLoop.makePromise(of: Value.self)
        let timer = eventLoop.scheduleTask(in: timeout.timeAmount) {
            promise.fail(deadlineError(host: host, waitingFor: what, after: timeout))
            channel?.close(promise: nil)
        }
        whenComplete { result in
            timer.cancel()
            promise.completeWith(result)
        }
        return promise.futureResult
    }

    /// This future with any error turned into a `MailError` (see `MailNetErrors.map`).
    public func mapMailError(settings: ConnectionSettings, during what: String) -> EventLoopFuture<Value> {
        flatMapErrorThrowing { error in
            throw MailNetErrors.map(error, settings: settings, during: what)
        }
    }
}

/// Runs `operation`, failing with a retryable `.connection` `MailError` naming `host` when it
/// has not finished within `timeout`. The caller resumes at the deadline even if `operation`
/// ignores cancellation (it is cancelled and left to wind down); close the connection
/// after a deadline so that nothing keeps waiting on it.
public func withDeadline<T: Sendable>(_ timeout: Duration, host: String, waitingFor what: String,
                                      _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let race = DeadlineRace<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            race.install(continuation)
            let work = Task {
                do {
                    race.finish(.success(try await operation()))
                } catch {
                    race.finish(.failure(error))
                }
            }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled {
                    race.finish(.failure(deadlineError(host: host, waitingFor: what, after: timeout)))
                    work.cancel()
                }
            }
            race.setTasks(work: work, timer: timer)
        }
    } onCancel: {
        race.finish(.failure(CancellationError()))
    }
}

private final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, Error>?
        var pending: Result<T, Error>?
        var finished = false
        var work: Task<Void, Never>?
        var timer: Task<Void, Never>?
    }
    private let state = NIOLockedValueBox(State())

    func install(_ continuation: CheckedContinuation<T, Error>) {
        let pending: Result<T, Error>? = state.withLockedValue { s in
            if let p = s.pending {
                s.pending = nil
                return p
            }
            s.continuation = continuation
            return nil
        }
        if let pending { continuation.resume(with: pending) }
    }

    func setTasks(work: Task<Void, Never>, timer: Task<Void, Never>) {
        let finished = state.withLockedValue { s -> Bool in
            s.work = work
            s.timer = timer
            return s.finished
        }
        if finished {
            timer.cancel()
            work.cancel()
        }
    }

    func finish(_ result: Result<T, Error>) {
        let (continuation, timer, work): (CheckedContinuation<T, Error>?, Task<Void, Never>?, Task<Void, Never>?) =
            state.withLockedValue { s in
                guard !s.finished else { return (nil, nil, nil) }
                s.finished = true
                if let c = s.continuation {
                    s.continuation = nil
                    return (c, s.timer, s.work)
                }
                s.pending = result
                return (nil, s.timer, s.work)
            }
        timer?.cancel()
        if case .failure = result { work?.cancel() }
        continuation?.resume(with: result)
    }
}
