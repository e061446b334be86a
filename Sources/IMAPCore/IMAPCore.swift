// IMAPCore
