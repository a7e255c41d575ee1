"""Signaling protocol: messages and schemas, JWT auth, rate limiting. Stands alone."""
