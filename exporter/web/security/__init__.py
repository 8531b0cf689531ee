"""The web configuration file (TLS, headers, basic auth users): PyYAML and bcrypt live here."""
