"""The deployment kit: compose file and Kubernetes manifests."""
