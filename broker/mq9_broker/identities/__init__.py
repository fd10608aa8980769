"""Who an agent is and what it owns: credentials, logins (the auth callout) and ownership."""
