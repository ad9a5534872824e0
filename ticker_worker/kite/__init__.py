"""Kite Connect adapters: the binary ticker codec, the asyncio ticker client, the REST client."""
