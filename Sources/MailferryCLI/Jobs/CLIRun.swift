import ArgumentParser
import Foundation
import Logging
import MailModel

/// What one job produced: its report (when it got far enough to have one),
/// the exit code it maps to, and a few lines for a human.
struct JobResult: Sendable {
    var report: (any Encodable & Sendable)?
    var exitCode: Int32
    var summary: [String]
}

/// The error part of a JSON summary.
struct ErrorSummary: Codable, Sendable {
    var kind: String
    var message: String
    var exitCode: Int32

    init(_ error: Error) {
        let p = ErrorPresenter.present(error)
        kind = (error as? MailError)?.kind.rawValue ?? (error is CancellationError ? "cancelled" : "error")
        message = p.line
        exitCode = p.exitCode
    }
}

/// The JSON summary of a job that failed before it had a report.
struct FailedJobSummary: Codable, Sendable {
    var command: String
    var job: String?
    var from: String
    var to: String
    var exitCode: Int32
    var error: ErrorSummary
}

/// The JSON summary of `mailferry run`.
struct RunSummary: Encodable {
    struct Entry: Encodable, Sendable {
        var name: String?
        var kind: String
        var from: String
        var to: String
        var exitCode: Int32
        var error: ErrorSummary?
        var report: (any Encodable & Sendable)?

        enum CodingKeys: String, CodingKey { case name, kind, from, to, exitCode, error, report }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(name, forKey: .name)
            try c.encode(kind, forKey: .kind)
            try c.encode(from, forKey: .from)
            try c.encode(to, forKey: .to)
            try c.encode(exitCode, forKey: .exitCode)
            try c.encodeIfPresent(error, forKey: .error)
            if let report { try report.encode(to: c.superEncoder(forKey: .report)) }
        }
    }
    var command = "run"
    var config: String?
    var exitCode: Int32
    var jobs: [Entry]
}

/// Runs jobs for the commands: logging, progress, reports, JSON and the exit code.
enum CLIRun {
    /// Runs one job from the command line. Throws `ExitCode` for a non-zero result.
    static func execute(single job: JobSpec, output: OutputSettings) async throws {
        Diagnostics.configure(output)
        let logger = Diagnostics.makeLogger()
        let progress = ProgressRenderer(enabled: output.progress)
        defer { progress.finish() }
        do {
            let result = try await JobExecutor.run(job, logger: logger, progress: progress)
            progress.finish()
            if let path = job.reportPath, let report = result.report { try JSONOutput.write(AnyEncodable(report), to: path) }
            if output.json {
                if let report = result.report { try JSONOutput.print(AnyEncodable(report)) }
            } else if !output.quiet, Terminal.isTerminal(fd: 2) || output.verbosity > 0 {
                for line in result.summary { Diagnostics.summary(line) }
            } else if result.exitCode != 0 {
                for line in result.summary { Diagnostics.summary(line) }
            }
            if result.exitCode != 0 { throw ExitCode(result.exitCode) }
        } catch let e as ExitCode {
            throw e
        } catch {
            progress.finish()
            if output.json {
                let p = ErrorPresenter.present(error)
                try? JSONOutput.print(FailedJobSummary(command: job.kind.rawValue, job: job.name, from: job.from.location.description,
                                                       to: job.to.location.description, exitCode: p.exitCode, error: ErrorSummary(error)))
            }
            throw error
        }
    }

    /// Runs the jobs of a config file, `parallelJobs` at a time. A failing job
    /// does not stop the others (unless the run is interrupted).
    static func execute(jobs: [JobSpec], parallelJobs: Int, output: OutputSettings, config: String? = nil) async throws {
        Diagnostics.configure(output)
        // Several progress lines at once would garble; show one only when jobs run one at a time.
        let showProgress = output.progress && parallelJobs == 1
        var entries = [RunSummary.Entry?](repeating: nil, count: jobs.count)

        await withTaskGroup(of: (Int, RunSummary.Entry).self) { group in
            var next = 0
            func start(_ i: Int) {
                let job = jobs[i]
                group.addTask {
                    var logger = Diagnostics.makeLogger()
                    if let n = job.name { logger[metadataKey: "job"] = "\(n)" }
                    let progress = ProgressRenderer(enabled: showProgress, label: job.name ?? "")
                    defer { progress.finish() }
                    var entry = RunSummary.Entry(name: job.name, kind: job.kind.rawValue, from: job.from.location.description,
                                                 to: job.to.location.description, exitCode: 0)
                    do {
                        try Task.checkCancellation()
                        let result = try await JobExecutor.run(job, logger: logger, progress: progress)
                        progress.finish()
                        if let path = job.reportPath, let report = result.report { try JSONOutput.write(AnyEncodable(report), to: path) }
                        entry.exitCode = result.exitCode
                        entry.report = result.report
                        if !output.json, !output.quiet || result.exitCode != 0 {
                            if Terminal.isTerminal(fd: 2) || output.verbosity > 0 || result.exitCode != 0 {
                                for line in result.summary { Diagnostics.summary("\(job.name ?? "job"): \(line)") }
                            }
                        }
                    } catch {
                        progress.finish()
                        let p = ErrorPresenter.present(error)
                        entry.exitCode = p.exitCode
                        entry.error = ErrorSummary(error)
                        Diagnostics.error("\(job.name ?? "job"): \(p.line)")
                    }
                    return (i, entry)
                }
            }
            while next < min(parallelJobs, jobs.count) {
                start(next)
                next += 1
            }
            for await (i, entry) in group {
                entries[i] = entry
                if next < jobs.count {
                    start(next)
                    next += 1
                }
            }
        }
        let done = entries.compactMap { $0 }
        let code = mostSerious(done.map(\.exitCode))
        if output.json {
            try JSONOutput.print(RunSummary(config: config, exitCode: code, jobs: done))
        }
        if code != 0 { throw ExitCode(code) }
    }

    /// 130, 6, 5, 3, 4, 2, 1, 0: the code that most needs a human.
    static func mostSerious(_ codes: [Int32]) -> Int32 {
        let order: [Int32] = [130, 6, 5, 3, 4, 2, 1]
        for c in order where codes.contains(c) { return c }
        return codes.first { $0 != 0 } ?? 0
    }
}

/// Wraps an existential Encodable so it can be passed to generic encoders.
struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: Encoder) throws { try value.encode(to: encoder) }
}
