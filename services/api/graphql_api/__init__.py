"""The strawberry code-first GraphQL schema of the registry."""
