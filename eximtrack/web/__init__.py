"""The Track Delivery web app: JSON API, OpenAPI document and the page (`eximtrack serve`), API tokens
(`eximtrack token`). Standard library HTTP only; the page is plain HTML/CSS/JS shipped in `static/`."""
