-- KEYS: pk hash, top_a, top_b   Returns the PK state.
--#include _pk.lua
return pk_render(false)
