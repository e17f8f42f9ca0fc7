"""A real SMTP sink for the stack: aiosmtpd accepts mail, a small JSON HTTP API lists what arrived."""
