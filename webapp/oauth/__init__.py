"""OAuth 2.1 / OpenID Connect provider: registered clients, authorization codes, discovery."""
