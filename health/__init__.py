"""Customer Health Intelligence: the engine (no Streamlit, no network, no warehouse)."""
