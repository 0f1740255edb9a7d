"""The only code that opens the database or writes to the data folder."""
