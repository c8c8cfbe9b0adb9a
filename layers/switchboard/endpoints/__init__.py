"""HTTP endpoints beyond OpenAI chat, one module each; ``api.create_app`` routes to them."""
