// MailNet
