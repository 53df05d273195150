"""Board-side code: runs on the boards with numpy and the board's own runtime only."""
