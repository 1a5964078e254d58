"""Who may do what: accounts, passwords, sessions and the one role policy (`policy.can`)."""
