// POP3Core
