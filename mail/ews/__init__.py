"""Exchange Web Services for reading and sending (exchangelib)."""
