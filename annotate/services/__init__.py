"""Business rules of the labeling app, one module per responsibility.

Every public function is keyword-only, typed, runs in a transaction and is
named `<entity>_<action>`. Import from the submodules directly.
"""
