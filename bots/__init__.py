"""Platform adapters: thin layers that turn chat-platform events into core Requests and render Replies."""
