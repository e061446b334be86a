import IMAPCore
import Testing

struct ModifiedUTF7Tests {
    static let table: [(String, String)] = [
        ("INBOX", "INBOX"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Été", "&AMk-t&AOk-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("&", "&-"),
        ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
        ("😀", "&2D3eAA-"),
        ("a😀b", "a&2D3eAA-b"),
        ("", ""),
    ]

    @Test(arguments: table)
    func encodesAndDecodes(_ pair: (String, String)) {
        #expect(ModifiedUTF7.encode(pair.0) == pair.1)
        #expect(ModifiedUTF7.decode(pair.1) == pair.0)
    }

    @Test(arguments: ["&", "&Jjo", "&AGE-", "&U,B-", "caf\u{e9}", "&-&", "&!!-"])
    func rejectsInvalid(_ s: String) {
        #expect(ModifiedUTF7.decode(s) == nil)
    }

    @Test func roundTripsEveryPlaneSample() {
        let samples = ["ÄÖÜäöüß", "日本語のフォルダ", "עברית", "emoji 🎉🎊 mix", "tab\there", "Ünïcödé/Sub/Ça"]
        for s in samples {
            #expect(ModifiedUTF7.decode(ModifiedUTF7.encode(s)) == s)
        }
    }
}
