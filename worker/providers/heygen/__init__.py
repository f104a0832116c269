"""The legacy HeyGen Streaming API: its typed client, error mapping, models and provider."""
