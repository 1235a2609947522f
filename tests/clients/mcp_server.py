"""A real MCP server made with the official `mcp` Python package (FastMCP), for
crates/tools/tests/mcp_real.rs: three tools (add, echo, fail) over any transport.

Usage: python mcp_server.py stdio | http PORT | sse PORT
  http: streamable HTTP at http://127.0.0.1:PORT/mcp
  sse:  the legacy HTTP+SSE transport at http://127.0.0.1:PORT/sse
"""

import sys

from mcp.server.fastmcp import FastMCP


def build(port: int = 8000) -> FastMCP:
    mcp = FastMCP("ferrollama-test", host="127.0.0.1", port=port, log_level="WARNING")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @mcp.tool()
    def echo(text: str) -> str:
        """Returns the text unchanged."""
        return text

    @mcp.tool()
    def fail(message: str) -> str:
        """Always raises, with the given message."""
        raise ValueError(message)

    return mcp


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("stdio", "http", "sse"):
        sys.exit(__doc__)
    mode = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    server = build(port)
    if mode == "stdio":
        server.run(transport="stdio")
    elif mode == "http":
        server.run(transport="streamable-http")
    else:
        server.run(transport="sse")


if __name__ == "__main__":
    main()
