"""The HTTP endpoints, one module each; ``http.app.create_app`` routes to them."""
