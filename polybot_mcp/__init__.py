"""polybot-mcp: the MCP server that lets agents look at and drive the polybot mesh."""
