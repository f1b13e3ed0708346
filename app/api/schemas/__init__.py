"""The API's answers, one schema per resource, by module: accounts and members (:mod:`.users`),
vocabularies, review resources (:mod:`.review`), training and models, jobs, imports and geometry
(:mod:`.transfer`). Pages that show the same data dump the same schemas (:mod:`.scan_page`)."""
