"""BGP: announcement decisions and ExaBGP rendering (pure), the hook process, config rendering."""
