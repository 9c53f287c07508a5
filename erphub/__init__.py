"""erphub: ERP integration and middleware hub for inventory."""
