"""What a slide shows: WHO numbers (differential, dysplasia %, blasts, M:E), charts and exports."""
