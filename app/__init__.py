"""peftlab's server package. The version lives here only: pyproject.toml reads it (dynamic version) and the
app reports it (OpenAPI, /docs), so `pip show peftlab` and the API docs always agree."""
__version__ = "0.3.0"
