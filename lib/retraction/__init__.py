"""email_retraction's core: plain Python, no StackStorm import."""
import warnings

# StackStorm 3.8 runs packs on Python 3.8. google-auth, google-api-core and cryptography warn
# on every import that 3.8 is past its end of life; in an action that lands in every
# execution's stderr and hides real problems. Silence exactly those notices, nothing else.
warnings.filterwarnings("ignore", message=r"You are using a (non-supported )?Python version",
                        category=FutureWarning)
warnings.filterwarnings("ignore", message=r"Python 3\.8 is no longer supported")
