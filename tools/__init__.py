"""The book's command-line tools. A package only so that the tests can import them."""
