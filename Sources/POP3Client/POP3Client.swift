// POP3Client
