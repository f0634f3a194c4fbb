"""``moss mcp``: serve the project's indexes as Model Context Protocol tools.

The server is :func:`moss.integrations.mcp.create_server` over the usual client (embedded store,
or ``--server-url``/``MOSS_SERVER_URL``). Over stdio, stdout carries the protocol and nothing
else: every note goes to stderr. The MCP SDK is imported only here, when the command runs, and a
missing SDK names ``pip install 'mosslite[mcp]'``.
"""

from __future__ import annotations

import argparse
import sys

from .common import make_client

__all__ = ["mcp"]


async def mcp(args: argparse.Namespace) -> int:
    """Run the MCP server until stdin closes (stdio) or Ctrl-C (http)."""
    from ..integrations.mcp import create_server  # MossError naming the extra when missing

    if args.transport == "http":
        from .server import check_port

        check_port(args.host, args.port)
    async with make_client(args) as client:
        server = create_server(client, allow_writes=args.allow_writes)
        if args.transport == "stdio":
            await server.run_stdio_async()
        else:
            sys.stderr.write(
                f"moss mcp: streamable HTTP on http://{args.host}:{args.port}/mcp"
                f"{' (writes allowed)' if args.allow_writes else ''}\n"
            )
            sys.stderr.flush()
            await server.run_streamable_http_async(host=args.host, port=args.port)
    return 0
