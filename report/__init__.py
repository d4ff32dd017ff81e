"""Reports: schema, gates, Markdown and HTML."""
