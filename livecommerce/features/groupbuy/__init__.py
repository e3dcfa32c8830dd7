"""Group buys (拼团): campaigns, groups that open, fill and succeed or fail, refunds."""
