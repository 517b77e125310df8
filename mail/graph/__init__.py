"""Microsoft Graph v1.0 (issue 21): the HTTP client; the backend class comes next."""
