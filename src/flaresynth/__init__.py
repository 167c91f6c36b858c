"""flaresynth: synthetic SDO/AIA full-disk images with solar flares of a chosen GOES class.

The method follows Ramunno et al. 2024 (A&A 686, A285): GOES-labelled AIA 171 Å images, a
class-conditional DDPM with classifier-free guidance, and evaluation against real images.
"""

__version__ = "0.1.0"
