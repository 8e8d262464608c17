"""
The C{--auth users:FILE} twisted.cred checker plugin: socksrelay's own user
database (L{socksrelay.users}).  The checker code is imported only when the
plugin is used.
"""

from zope.interface import implementer

from twisted import plugin
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory

usersCheckerFactoryHelp = """
Checks user names and bcrypt-hashed passwords against a socksrelay users
file, one user per line (NAME:HASH:groups=a,b;max-sessions=N;up=BPS;
down=BPS;external=IP;expires=ISO8601). The user's groups and limits apply
to their sessions; expired users are refused. The file is re-read when it
changes. Manage it with the socksrelay-users command.
"""


@implementer(ICheckerFactory, plugin.IPlugin)
class UsersCheckerFactory:
    """
    A factory for L{socksrelay.users.UsersChecker}.
    """

    authType = "users"
    authHelp = usersCheckerFactoryHelp
    argStringFormat = "Path to a socksrelay users file (see socksrelay-users)."
    credentialInterfaces = (IUsernamePassword,)

    def generateChecker(self, argstring):
        """
        A checker for the users file at C{argstring}.

        @raise ValueError: if the path is empty, or the file cannot be read
            or is not valid.
        """
        from socksrelay.users import UsersChecker

        path = argstring.strip()
        if not path:
            raise ValueError("users: requires the path of a users file")
        try:
            return UsersChecker(path)
        except OSError as e:
            raise ValueError(f"cannot read users file {path}: {e.strerror or e}")


theUsersCheckerFactory = UsersCheckerFactory()
