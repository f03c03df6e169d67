-- Migration 8 (issue #10): a peer added through the API may authenticate as an OpenID Connect
-- client (client credentials grant) instead of with a token file: its settings as JSON
-- (token_url, client_id, client_secret_file, scope; the secret itself stays in its file).
ALTER TABLE peers ADD COLUMN oidc TEXT;
