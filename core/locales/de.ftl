# Die Seiten von authnz auf Deutsch. Jeder Katalog hat genau diese Schlüssel (ein Test prüft es).

language-name = Deutsch
sign-in-title = Anmelden
choose-provider = Wählen Sie, wie Sie sich anmelden:
providers-nav = Identitätsanbieter
no-providers = Es ist kein Identitätsanbieter eingerichtet. Eine Administratorin oder ein Administrator muss einen in idps.toml eintragen.
signed-in-continue = Sie sind angemeldet. { $target }
continue-to = Weiter zu { $target }

account-title = Ihr Konto
signed-in-as = Angemeldet als { $username }{ $email }.
linked-identities = Verknüpfte Identitäten
col-provider = Anbieter
col-subject = Kennung
col-email = E-Mail
col-linked = Verknüpft
col-last-sign-in = Letzte Anmeldung
col-action = Aktion
disconnect = Trennen
only-way-in = Ihr einziger Weg zur Anmeldung
connect-another = Weiteren Anbieter verbinden
connect-provider = { $label } verbinden
log-out = Abmelden
administration = Verwaltung
administration-what = Identitätsanbieter, Anmeldungen, Neu laden.

api-keys = API-Schlüssel
api-keys-none = Noch keine. Skripte verwenden einen als { $header } für { $paths }.
col-name = Name
col-starts-with = Beginnt mit
col-created = Erstellt
col-expires = Läuft ab
expires-never = nie
delete = Löschen
delete-key-label = Den API-Schlüssel { $name } löschen
new-key-name = Name eines neuen Schlüssels
new-key-placeholder = Skripte auf dem Laptop
new-key-expires = Läuft ab
expires-30 = in 30 Tagen
expires-90 = in 90 Tagen
expires-365 = in einem Jahr
create-key = API-Schlüssel erstellen
also-in-docs = Auch in { $docs }.
api-docs = der API-Dokumentation

sessions = Wo Sie angemeldet sind
col-device = Gerät
col-network = Netz
col-signed-in = Angemeldet
unknown-device = Unbekanntes Gerät
this-browser = (dieser Browser)
sign-out = Abmelden
end-session = Beenden
end-session-label = { $action }: { $device }, angemeldet { $when }
sign-out-elsewhere = Überall sonst abmelden
sign-out-elsewhere-label = Überall sonst abmelden (alle Sitzungen außer dieser)

signed-out-title = Abgemeldet
not-signed-in = Sie sind nicht angemeldet.
continue = Weiter
sign-out-title = Abmelden
sign-out-question = Von allen Anwendungen abmelden, die diese Anmeldung nutzen?
stay-signed-in = Angemeldet bleiben

problem-title = Problem bei der Anmeldung
advice-400 = Die Anmeldung konnte nicht abgeschlossen werden: Sie ist vielleicht abgelaufen, wurde schon verwendet oder in einem anderen Browser begonnen. Bitte beginnen Sie erneut.
advice-401 = Die Antwort des Identitätsanbieters konnte nicht überprüft werden. Bitte beginnen Sie erneut; wenn das wieder geschieht, wenden Sie sich an die Administration.
advice-403 = Das dürfen Sie nicht.
advice-404 = Hier gibt es nichts.
advice-409 = Das steht im Widerspruch zu einem bestehenden Konto.
advice-502 = Der Identitätsanbieter antwortet nicht richtig. Bitte versuchen Sie es später noch einmal.
advice-other = Bei uns ist etwas schiefgegangen. Bitte versuchen Sie es später noch einmal.
error-code = Fehlercode:
back-to-start = Zurück zum Anfang

signup-title = Konto anlegen
signup-first = Sie melden sich zum ersten Mal mit { $label } an. Ein Konto wird angelegt:
col-username = Benutzername
signup-create = Mein Konto anlegen
cancel = Abbrechen
disconnect-title = Anbieter trennen
disconnect-what = Beim Trennen werden die Token dieses Anbieters aus authnz entfernt (und beim Anbieter widerrufen, wo das geht). Ihr Konto bleibt bestehen.
disconnect-identity = { $idp } trennen ({ $who })
new-key-title = Ihr neuer API-Schlüssel
new-key-copy-now = Kopieren Sie den Schlüssel jetzt: Er wird nur dieses eine Mal angezeigt (authnz behält nur seinen Hash).
new-key-expires-on = Er läuft am { $date } ab.
new-key-no-expiry = Er läuft nicht ab.
new-key-label = API-Schlüssel „{ $name }“
copy-key = Schlüssel kopieren
copied = Kopiert.
new-key-use = Skripte verwenden ihn als { $header } für { $paths }.
back-to-account = Zurück zu Ihrem Konto

privacy = Datenschutz
help = Hilfe
languages = Sprachen
