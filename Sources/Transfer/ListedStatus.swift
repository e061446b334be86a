import MailModel
import SyncState

/// What this run's folder listings (IMAP LIST-STATUS) said about each folder:
/// a source folder's message count, and with QRESYNC a folder's UIDVALIDITY,
/// UIDNEXT and HIGHESTMODSEQ, which tell whether it changed as well as a
/// SELECT would.
///
/// Each folder's status is handed out once (`take`): it describes the folder
/// as the run found it, and after a pair has worked on a folder (or tried to,
/// and is being retried) only a fresh SELECT says what it holds. A
/// destination that several source folders feed is thus read from its listed
/// status by the first pair only. The source's message count stays
/// (`sourceCount`): it is only ever checked beside a status or a SELECT that
/// shows the folder as saved.
struct ListedFolders: Sendable {
    private(set) var source: [FolderPath: FolderInfo] = [:]
    private(set) var destination: [FolderPath: FolderInfo] = [:]
    private var takenSource = Set<FolderPath>()
    private var takenDestination = Set<FolderPath>()

    init(source: [FolderInfo] = [], destination: [FolderInfo] = []) {
        for f in source { self.source[f.path] = f }
        for f in destination { self.destination[f.path] = f }
    }

    /// The pair's two listed statuses, the first time each folder is asked
    /// for; nil after that, so that no later look at it in this run goes by them.
    mutating func take(_ pair: FolderPair) -> (source: FolderInfo?, destination: FolderInfo?) {
        (takenSource.insert(pair.source).inserted ? source[pair.source] : nil,
         takenDestination.insert(pair.destination).inserted ? destination[pair.destination] : nil)
    }

    /// The source folder's message count as listed, if the listing gave it.
    func sourceCount(_ folder: FolderPath) -> Int? { source[folder]?.messageCount }
}

/// The pure rules that read "unchanged since the last run" off listed statuses.
enum ListedStatus {
    /// One folder is as the last run left it: the listing gave its
    /// UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, the state saved all three, and
    /// they are equal. (Nothing new: UIDNEXT; no flag change or expunge:
    /// HIGHESTMODSEQ, under QRESYNC; the same ids: UIDVALIDITY.) A
    /// HIGHESTMODSEQ of 0 is a folder without mod-sequences (RFC 7162): it
    /// cannot tell, whatever was saved.
    static func unchanged(listed: FolderValidity?, saved: FolderMark?) -> Bool {
        guard let l = listed, let s = saved?.validity, l.uidValidity != nil, l.uidNext != nil,
              let modSeq = l.highestModSeq, modSeq != 0 else { return false }
        return l == s
    }

    /// Whether a pair will most likely need no work: both folders unchanged
    /// by their listed status, and the source's message count listed (the
    /// executor checks it against the keys the state knows). Only a forecast,
    /// to size the job's workers: `Executor.unchangedSinceLastRun` decides.
    /// A job that propagates flags or deletes from the source always works
    /// on its pairs.
    static func forecastUnchanged(source: FolderInfo?, sourceMark: FolderMark?,
                                  destination: FolderInfo?, destinationMark: FolderMark?,
                                  propagateFlags: Bool, deleteSource: Bool) -> Bool {
        guard !propagateFlags, !deleteSource, source?.messageCount != nil else { return false }
        return unchanged(listed: source?.validity, saved: sourceMark)
            && unchanged(listed: destination?.validity, saved: destinationMark)
    }
}
