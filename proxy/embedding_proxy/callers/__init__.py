"""Who is calling and what they may do: API keys, priority lanes, rate limits."""
