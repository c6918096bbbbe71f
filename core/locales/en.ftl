# authnz's pages in English. Every catalogue has exactly these keys (a test checks it).
# Arguments marked (html) arrive already escaped.

language-name = English
sign-in-title = Sign in
choose-provider = Choose how to sign in:
providers-nav = Identity providers
no-providers = No identity provider is configured. An administrator must add one to idps.toml.
# $target (html): where the person was going
signed-in-continue = You are signed in. { $target }
continue-to = Continue to { $target }
continue-sign-in-title = Signing you in
continue-sign-in = One moment: authnz is finishing your sign-in.

account-title = Your account
# $username (html), $email (html): " (ann@example.org)" or nothing
signed-in-as = Signed in as { $username }{ $email }.
linked-identities = Linked identities
col-provider = Provider
col-subject = Subject
col-email = Email
col-linked = Linked
col-last-sign-in = Last sign-in
col-action = Action
disconnect = Disconnect
only-way-in = Your only way to sign in
connect-another = Connect another provider
# $label: the provider's button text
connect-provider = Connect { $label }
log-out = Log out
administration = Administration
administration-what = identity providers, logins, reload.

api-keys = API keys
# $header (html), $paths (html)
api-keys-none = None yet. Scripts present one as { $header } on { $paths }.
col-name = Name
col-starts-with = Starts with
col-created = Created
col-expires = Expires
expires-never = never
delete = Delete
# $name: the key's name
delete-key-label = Delete the API key { $name }
new-key-name = Name of a new key
new-key-placeholder = laptop scripts
new-key-expires = Expires
expires-30 = in 30 days
expires-90 = in 90 days
expires-365 = in a year
create-key = Create an API key
# $docs (html): a link to the API docs
also-in-docs = Also in { $docs }.
api-docs = the API docs

sessions = Where you are signed in
col-device = Device
col-network = Network
col-signed-in = Signed in
unknown-device = Unknown device
# $browser, $system: e.g. "Firefox", "Linux"
device-on = { $browser } on { $system }
this-browser = (this browser)
sign-out = Sign out
end-session = End
# $action: "Sign out" or "End"; $device; $when
end-session-label = { $action }: { $device }, signed in { $when }
sign-out-elsewhere = Sign out everywhere else
sign-out-elsewhere-label = Sign out everywhere else (every session but this one)

signed-out-title = Signed out
not-signed-in = You are not signed in.
continue = Continue
sign-out-title = Sign out
sign-out-question = Sign out of every application that uses this sign-in?
stay-signed-in = Stay signed in

problem-title = Sign-in problem
advice-400 = The sign-in could not be completed: it may have expired, been used already, or been started in another browser. Please start again.
advice-401 = The identity provider's answer could not be verified. Please start again; if it keeps happening, contact the administrator.
advice-403 = You are not allowed to do this.
advice-404 = There is nothing here.
advice-409 = This conflicts with an existing account.
advice-502 = The identity provider is not answering properly. Please try again later.
advice-other = Something went wrong on our side. Please try again later.
error-code = Error code:
back-to-start = Back to the start

signup-title = Create your account
# $label (html): the provider
signup-first = This is your first sign-in with { $label }. An account will be created:
col-username = Username
signup-create = Create my account
cancel = Cancel
not-now = Not now
# After a first sign-in whose email address belongs to an account.
conflict-title = This email address already has an account
# $email (html), $label (html)
conflict-explain = An account with the address { $email } already exists, so signing in with { $label } did not make a new one.
conflict-how-known = Sign in to it the way you did before. You can then connect { $label } to it and sign in with either.
conflict-how-unknown = If it is your account, sign in to it the way you did before. You can then connect { $label } to it.
conflict-no-way = No other way to sign in to that account is configured here; ask an administrator.
conflict-nav = Ways to sign in to that account
connect-after-title = Connect { $label }?
# $username (html), $label (html)
connect-after-explain = You are signed in as { $username }. Connect { $label } to this account to sign in with it too; { $label } asks you to sign in once more.
connect-after-other = You are signed in as { $username }, which is not the account with that email address, so { $label } was not connected.
connect-after-done = This account already has a { $label } identity; disconnect it on your account page to connect another.
disconnect-title = Disconnect a provider
disconnect-what = Disconnecting removes this provider's tokens from authnz (and revokes them at the provider where it can). Your account stays.
# $idp: the provider; $who: the identity's email or subject
disconnect-identity = Disconnect { $idp } ({ $who })
new-key-title = Your new API key
new-key-copy-now = Copy the key now: it is shown only this once (authnz keeps only its hash).
# $date: when it expires
new-key-expires-on = It expires on { $date }.
new-key-no-expiry = It does not expire.
# $name: the key's name
new-key-label = API key “{ $name }”
copy-key = Copy the key
copied = Copied.
# $header (html), $paths (html)
new-key-use = Scripts present it as { $header } on { $paths }.
back-to-account = Back to your account

admin-title = Administration
state-ready = ready
state-failing = failing
state-pending = discovering
state-unavailable = unavailable
# The built-in development IdP's own form. $development (html): dev-development, emphasised
dev-title = Sign in — dev IdP
dev-development = development
dev-warning = This is authnz's { $development } identity provider: you can sign in as anyone, without a password. Never enable it on a public server.
dev-username = User name
dev-email = Email (optional)
dev-sign-in = Sign in
dev-bad-username = User names are 1-64 letters, digits, '.', '_' or '-'.
admin-configuration = Configuration
admin-generation = Generation
admin-loaded = Loaded
admin-digest = Digest
admin-reloads = { $done } done, { $refused } refused
admin-reloads-title = Reloads
admin-store = Store
admin-reload-refused = The last reload{ $when } was refused; the configuration before it stays in force:
admin-reload-ok = The last reload ({ $when }) succeeded.
admin-reload-button = Reload idps.toml
admin-idps = Identity providers
col-idp = IdP
col-state = State
col-discovered = Discovered
col-key-fetches = Key fetches
col-logins = Logins
col-done = Done
col-failed = Failed (reason)
admin-all-metrics = All metrics
admin-your-account = Your account

privacy = Privacy
help = Help
languages = Languages

# The `message` of JSON errors, by their stable `error` code (English keeps the message the
# code gives, which may say more).
error-unauthorized = log in first
error-csrf-token-invalid = the request lacks this session's CSRF token
error-cross-site-request = cross-site requests are refused
error-session-required = this needs a signed-in browser session (with its CSRF token); an API key or access token cannot do it
error-not-an-admin = this needs an admin named in [server] admins
error-invalid-state = this sign-in is unknown or was already used
error-missing-state = the callback has no state
error-expired-state = this sign-in took too long and expired
error-state-mismatch = this sign-in was started for another identity provider
error-browser-mismatch = this sign-in was started in another browser (or cookies are blocked)
error-missing-code = the callback has no authorization code
error-unknown-idp = no such identity provider
error-no-such-session = this account has no such session
error-no-such-key = no such API key
error-no-such-identity = this account has no such identity
error-last-identity = this is the account's only way to log in; connect another provider first
error-invalid-signup = this sign-up is unknown, used or expired; sign in again
error-invalid-intent = this offer to connect a provider is unknown or expired; sign in again
error-too-many-logins = too many sign-ins were started; wait a few minutes and try again
error-store-unavailable = the database is unavailable; try again in a moment
error-forbidden = not allowed
error-not-found = no such resource
