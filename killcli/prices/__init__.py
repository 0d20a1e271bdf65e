"""Market prices: the history store, EVE Ref archive import, and the ESI price sync."""
