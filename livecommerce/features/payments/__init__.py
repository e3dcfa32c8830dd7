"""Payment providers behind one interface; a sandbox one with a real ledger."""
