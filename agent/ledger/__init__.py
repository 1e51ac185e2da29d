"""The outcome ledger: one typed record per ended incident, and the report folded from them."""
