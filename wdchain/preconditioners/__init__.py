"""The preconditioners of ``build``, one file each: its State, its ``scale_by_*``, its
options (checked once, there) and its registry entry.

Importing a file registers its entry; the order below is the registry's order.
"""

from wdchain.preconditioners import sgd as sgd
from wdchain.preconditioners import momentum as momentum
from wdchain.preconditioners import adagrad as adagrad
from wdchain.preconditioners import rmsprop as rmsprop
from wdchain.preconditioners import adam as adam
from wdchain.preconditioners import nadam as nadam
from wdchain.preconditioners import radam as radam
from wdchain.preconditioners import adamax as adamax
from wdchain.preconditioners import lion as lion
from wdchain.preconditioners import lamb as lamb
from wdchain.preconditioners import adadelta as adadelta
from wdchain.preconditioners import asgd as asgd
from wdchain.preconditioners import adafactor as adafactor
from wdchain.preconditioners import muon as muon
from wdchain.preconditioners import adopt as adopt
from wdchain.preconditioners import ademamix as ademamix
from wdchain.preconditioners import lars as lars
from wdchain.preconditioners import adan as adan
from wdchain.preconditioners import schedule_free as schedule_free
