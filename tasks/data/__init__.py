"""Input and output: seed material in; the dataset directory, its schema, card, report, recipe and
dated versions out; the push to the Hugging Face Hub."""
