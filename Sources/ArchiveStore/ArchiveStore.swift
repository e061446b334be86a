// ArchiveStore
