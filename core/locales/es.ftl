# Las páginas de authnz en español. Cada catálogo tiene exactamente estas claves (una prueba lo comprueba).

language-name = Español
sign-in-title = Iniciar sesión
choose-provider = Elija cómo iniciar sesión:
providers-nav = Proveedores de identidad
no-providers = No hay ningún proveedor de identidad configurado. Un administrador debe añadir uno en idps.toml.
signed-in-continue = Ha iniciado sesión. { $target }
continue-to = Continuar a { $target }

account-title = Su cuenta
signed-in-as = Sesión iniciada como { $username }{ $email }.
linked-identities = Identidades vinculadas
col-provider = Proveedor
col-subject = Identificador
col-email = Correo
col-linked = Vinculada
col-last-sign-in = Último inicio de sesión
col-action = Acción
disconnect = Desvincular
only-way-in = Su única forma de iniciar sesión
connect-another = Vincular otro proveedor
connect-provider = Vincular { $label }
log-out = Cerrar sesión
administration = Administración
administration-what = proveedores de identidad, inicios de sesión, recarga.

api-keys = Claves de API
api-keys-none = Ninguna todavía. Los scripts presentan una como { $header } en { $paths }.
col-name = Nombre
col-starts-with = Empieza por
col-created = Creada
col-expires = Caduca
expires-never = nunca
delete = Eliminar
delete-key-label = Eliminar la clave de API { $name }
new-key-name = Nombre de una clave nueva
new-key-placeholder = scripts del portátil
new-key-expires = Caduca
expires-30 = en 30 días
expires-90 = en 90 días
expires-365 = en un año
create-key = Crear una clave de API
also-in-docs = También en { $docs }.
api-docs = la documentación de la API

sessions = Dónde ha iniciado sesión
col-device = Dispositivo
col-network = Red
col-signed-in = Inicio de sesión
unknown-device = Dispositivo desconocido
this-browser = (este navegador)
sign-out = Cerrar sesión
end-session = Terminar
end-session-label = { $action }: { $device }, sesión iniciada { $when }
sign-out-elsewhere = Cerrar sesión en todos los demás sitios
sign-out-elsewhere-label = Cerrar sesión en todos los demás sitios (todas las sesiones salvo esta)

signed-out-title = Sesión cerrada
not-signed-in = No ha iniciado sesión.
continue = Continuar
sign-out-title = Cerrar sesión
sign-out-question = ¿Cerrar la sesión en todas las aplicaciones que usan este inicio de sesión?
stay-signed-in = Mantener la sesión

problem-title = Problema al iniciar sesión
advice-400 = No se pudo completar el inicio de sesión: puede haber caducado, haberse usado ya o haberse empezado en otro navegador. Vuelva a empezar.
advice-401 = No se pudo verificar la respuesta del proveedor de identidad. Vuelva a empezar; si sigue ocurriendo, contacte con el administrador.
advice-403 = No tiene permiso para hacer esto.
advice-404 = Aquí no hay nada.
advice-409 = Esto entra en conflicto con una cuenta existente.
advice-502 = El proveedor de identidad no responde correctamente. Inténtelo de nuevo más tarde.
advice-other = Algo ha fallado por nuestra parte. Inténtelo de nuevo más tarde.
error-code = Código de error:
back-to-start = Volver al inicio

signup-title = Crear su cuenta
signup-first = Es la primera vez que inicia sesión con { $label }. Se creará una cuenta:
col-username = Nombre de usuario
signup-create = Crear mi cuenta
cancel = Cancelar
disconnect-title = Desvincular un proveedor
disconnect-what = Al desvincular se eliminan de authnz los tokens de este proveedor (y se revocan en el proveedor cuando es posible). Su cuenta se mantiene.
disconnect-identity = Desvincular { $idp } ({ $who })
new-key-title = Su nueva clave de API
new-key-copy-now = Copie la clave ahora: solo se muestra esta vez (authnz guarda solo su hash).
new-key-expires-on = Caduca el { $date }.
new-key-no-expiry = No caduca.
new-key-label = Clave de API «{ $name }»
copy-key = Copiar la clave
copied = Copiada.
new-key-use = Los scripts la presentan como { $header } en { $paths }.
back-to-account = Volver a su cuenta

privacy = Privacidad
help = Ayuda
languages = Idiomas
