# Les pages d'authnz en français. Chaque catalogue a exactement ces clés (un test le vérifie).

language-name = Français
sign-in-title = Connexion
choose-provider = Choisissez comment vous connecter :
providers-nav = Fournisseurs d'identité
no-providers = Aucun fournisseur d'identité n'est configuré. Un administrateur doit en ajouter un dans idps.toml.
signed-in-continue = Vous êtes connecté. { $target }
continue-to = Continuer vers { $target }

account-title = Votre compte
signed-in-as = Connecté en tant que { $username }{ $email }.
linked-identities = Identités liées
col-provider = Fournisseur
col-subject = Identifiant
col-email = Courriel
col-linked = Liée le
col-last-sign-in = Dernière connexion
col-action = Action
disconnect = Dissocier
only-way-in = Votre seul moyen de connexion
connect-another = Lier un autre fournisseur
connect-provider = Lier { $label }
log-out = Se déconnecter
administration = Administration
administration-what = fournisseurs d'identité, connexions, rechargement.

api-keys = Clés d'API
api-keys-none = Aucune pour l'instant. Les scripts en présentent une comme { $header } sur { $paths }.
col-name = Nom
col-starts-with = Commence par
col-created = Créée le
col-expires = Expire
expires-never = jamais
delete = Supprimer
delete-key-label = Supprimer la clé d'API { $name }
new-key-name = Nom d'une nouvelle clé
new-key-placeholder = scripts du portable
new-key-expires = Expire
expires-30 = dans 30 jours
expires-90 = dans 90 jours
expires-365 = dans un an
create-key = Créer une clé d'API
also-in-docs = Aussi dans { $docs }.
api-docs = la documentation de l'API

sessions = Où vous êtes connecté
col-device = Appareil
col-network = Réseau
col-signed-in = Connecté le
unknown-device = Appareil inconnu
this-browser = (ce navigateur)
sign-out = Se déconnecter
end-session = Terminer
end-session-label = { $action } : { $device }, connecté le { $when }
sign-out-elsewhere = Se déconnecter partout ailleurs
sign-out-elsewhere-label = Se déconnecter partout ailleurs (toutes les sessions sauf celle-ci)

signed-out-title = Déconnecté
not-signed-in = Vous n'êtes pas connecté.
continue = Continuer
sign-out-title = Déconnexion
sign-out-question = Se déconnecter de toutes les applications qui utilisent cette connexion ?
stay-signed-in = Rester connecté

problem-title = Problème de connexion
advice-400 = La connexion n'a pas pu aboutir : elle a peut-être expiré, déjà servi, ou commencé dans un autre navigateur. Veuillez recommencer.
advice-401 = La réponse du fournisseur d'identité n'a pas pu être vérifiée. Veuillez recommencer ; si cela se reproduit, contactez l'administrateur.
advice-403 = Vous n'êtes pas autorisé à faire ceci.
advice-404 = Il n'y a rien ici.
advice-409 = Cela entre en conflit avec un compte existant.
advice-502 = Le fournisseur d'identité ne répond pas correctement. Veuillez réessayer plus tard.
advice-other = Quelque chose s'est mal passé de notre côté. Veuillez réessayer plus tard.
error-code = Code d'erreur :
back-to-start = Retour au début

signup-title = Créer votre compte
signup-first = C'est votre première connexion avec { $label }. Un compte va être créé :
col-username = Nom d'utilisateur
signup-create = Créer mon compte
cancel = Annuler
disconnect-title = Dissocier un fournisseur
disconnect-what = La dissociation retire d'authnz les jetons de ce fournisseur (et les révoque chez lui quand c'est possible). Votre compte reste.
disconnect-identity = Dissocier { $idp } ({ $who })
new-key-title = Votre nouvelle clé d'API
new-key-copy-now = Copiez la clé maintenant : elle n'est montrée que cette fois (authnz n'en garde que l'empreinte).
new-key-expires-on = Elle expire le { $date }.
new-key-no-expiry = Elle n'expire pas.
new-key-label = Clé d'API « { $name } »
copy-key = Copier la clé
copied = Copiée.
new-key-use = Les scripts la présentent comme { $header } sur { $paths }.
back-to-account = Retour à votre compte

privacy = Confidentialité
help = Aide
languages = Langues
