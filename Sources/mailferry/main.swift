import MailferryCLI
await Mailferry.main()
