"""Lucky draws (福袋) with a published commitment, so anyone can check the winners."""
