import MailferryCLI

await MailferryMain.main()
