"""Microsoft Graph v1.0 (issue 21): the HTTP client, the delta reader and the backend."""
